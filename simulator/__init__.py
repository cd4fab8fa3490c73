"""A fake site over real sockets (UPS, PDUs and loads on Modbus TCP and MQTT)."""
