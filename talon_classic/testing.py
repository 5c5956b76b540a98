"""pytest plugin: placeholder until the emulator lands."""
