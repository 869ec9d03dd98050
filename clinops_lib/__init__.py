"""clinops: executable runbooks with sealed evidence for a clinical-trials MLOps platform."""
__version__ = "0.1.0"
