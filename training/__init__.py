"""Training package (teachers per modality, distilled RGB student): reads the records through
`schemas/` and depends on TensorFlow only, never on Beam, MediaPipe or OpenCV.

Its models and jobs are not built yet; today it holds no code beyond this package marker.
"""
