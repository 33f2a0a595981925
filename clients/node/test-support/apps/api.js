// The seed's app: an HTTP server (cluster mode shares its port).
const http = require('http');
http.createServer((req, res) => res.end(`api ${process.pid}\n`)).listen(0, '127.0.0.1');
