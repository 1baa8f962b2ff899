"""Wan2.2 image-to-video RunPod worker: the logic behind rp_handler.py and start.sh."""
