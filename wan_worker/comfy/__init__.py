"""ComfyUI as the worker uses it.

`client` speaks its HTTP API and opens its websocket; `follower` runs one prompt and follows
it over the socket to its end; `failures` says each of ComfyUI's failures as a worker error;
`process` watches the ComfyUI process beside the handler and reads why it died; `launch`
starts that process.
"""
