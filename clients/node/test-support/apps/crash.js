// Runs until told to crash (any message), then exits with 3.
process.on('message', () => process.exit(3));
