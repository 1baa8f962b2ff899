"""Model provisioning: the manifest, its sources, and a verified, resumable downloader.

`python -m wan_worker.provision` makes every model in workflows/models.json present and
verified under the models root. The boot runs the same provisioner in a thread of the handler's
process while ComfyUI starts (`wan_worker.boot.main`); the command is for runs by hand and
for building the models bundle.
"""
