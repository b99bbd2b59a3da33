"""Repair methods (family ``repair``): remove a planted flaw from a model with a small clean data budget."""
