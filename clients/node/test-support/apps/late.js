// Says something once, after a while, then idles.
setTimeout(() => console.log('late line'), 400);
setInterval(() => {}, 1 << 30);
