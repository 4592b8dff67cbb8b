"""The preprocessing job: launch checks (`launch`), the Beam phases (`transforms`), the graph
(`run.run_job`), the dataset description (`info`), the progress reporter (`progress`) and the
typed job config (`config`). The command line is `pipelines.preprocess`."""
