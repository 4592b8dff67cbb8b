"""What the pipelines and the training package share: the record contract (`media_sequence`:
every key in one table, `KEYS`), the output layout (`layout`) and the dataset description
(`dataset_info`). Imports nothing else of the project."""
