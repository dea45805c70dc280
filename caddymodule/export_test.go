package caddymodule

// StoreLogger is storeLogger, for the external tests.
var StoreLogger = storeLogger
