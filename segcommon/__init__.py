"""Pieces shared by two or more of the project's models: config keys, solver, data, evaluation."""
