"""The preprocessing job and what it touches: manifests, the stages of one video, storage, the
Beam job, tools over a written dataset and the set-up step (docs/architecture.md)."""
