"""Domain logic: pure, no I/O, no clock, never imports homeassistant."""
