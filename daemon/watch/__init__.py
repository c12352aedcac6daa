"""From the filesystem to the index: watching, filtering, settling, scanning, hashing, recording."""
