"""Thin CLI commands: parse options -> build from config -> call library code."""
