"""The running service: lifecycle, control socket, reload, health, sd_notify, metrics, logs."""
