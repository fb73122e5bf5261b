"""Decoding of raw media (audio, text, video) into arrays the extractors take."""
