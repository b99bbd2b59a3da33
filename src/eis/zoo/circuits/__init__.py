"""The sequence side of the zoo: transformers whose circuits are known (compiled tracr programs)."""
