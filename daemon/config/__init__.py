"""Configuration: the model, reading and checking the TOML file, durations."""
