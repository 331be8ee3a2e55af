// n8n finds this package's nodes and credentials through the "n8n" attribute of
// package.json; nothing is exported here.
module.exports = {};
