'use strict';
// require('corral') is ready to use, as require('pm2') is: an API object
// whose calls connect on their own. `custom` is the class, for a second
// instance with its own cwd or home: `new pm2.custom({cwd: '/srv/app'})`.

const { API } = require('./lib/api');

module.exports = new API();
module.exports.custom = API;
