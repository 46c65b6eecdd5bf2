"""What the commands share with kubectl's habits: reading ``-f`` sources, printing ``-o`` formats and
one-line messages, waiting for the API server at start."""
