"""Device I/O: Modbus TCP and MQTT drivers. Never imports homeassistant."""
