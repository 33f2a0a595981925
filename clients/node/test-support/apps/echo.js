// Answers every message as the seed's second example expects.
process.on('message', function (packet) {
  process.send({
    type: 'process:msg',
    data: { success: true, got: packet.data },
  });
});
