"""Where the job's bytes go: TFRecord framing and the output directory, parts, GCS."""
