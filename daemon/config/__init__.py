"""Configuration: the model (dataclasses), the reader (file to Config), one parser per table
(sections) and the typed table accessor they share, problems, the full check, durations."""
