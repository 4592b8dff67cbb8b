"""The stages of one video, without Beam: decode, pose, tracking, clip assembly."""
