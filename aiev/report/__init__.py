"""Stage: what people look at. ``dataset`` (the released data set), ``summary`` (the run summary, projection)."""
