"""The room connect: run to its end whatever cancels it (``room``), one turn at a time
per process (``gate``)."""
