"""ASCOM Alpaca HTTP server for ZWO cameras."""
