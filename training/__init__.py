"""PERF-Net training: teachers per modality, the distilled RGB student, late-fusion evaluation.

Reads the preprocessed shards through `schemas.media_sequence` and depends on TensorFlow and
numpy only: never on Apache Beam, MediaPipe or OpenCV, so that it installs and runs on a TPU VM
(`pip install --no-deps .` then `pip install -r training/requirements.txt`).

Modules:
  config      typed dataclass configs, presets, validate(), JSON round trip
  inputs      tf.data pipeline: shared window/crop/flip across modalities, flow dequantization
  models      R3D50-G (paper Table 1), S3D-G, STM, feature gating, the classifier
  epam        EPAM-Net: X-ShiftNet RGB and skeleton-heatmap streams, pose-guided attention
  heatmaps    skeleton heatmap volumes from the records' keypoints (the `heatmap` modality)
  pose_render skeletons drawn onto the RGB clip from the keypoints (the `pose_live` modality)
  losses      cross-entropy, eq. (1) separate loss (SL) and unified loss (UL), L2
  schedule    warm-up + cosine learning rate, linear in the global batch size
  distribute  TPU / Mirrored / default strategy, bfloat16 policy
  trainer     the train / distill / fine-tune loop with checkpoints, resume and summaries
  evaluate    top-1/top-5 and late fusion over any set of models (Table 3)
  flops       parameter counts and FLOPs per clip
  main        the command line (`python -m training`, console `perfnet-train`)
"""
