// Runs and prints one line on each stream; nothing else.
console.log('quiet out');
console.error('quiet err');
setInterval(() => {}, 1 << 30);
