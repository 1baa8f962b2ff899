"""Model provisioning: the manifest, its sources, and a verified, resumable downloader.

`python -m wan_worker.provision` makes every model in workflows/models.json present and
verified under the models root; start.sh runs it before ComfyUI starts.
"""
