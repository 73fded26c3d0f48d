"""The team store: push and pull verified models through an S3-compatible object store.

config.py    [remotes.NAME] in imageworks.toml (no credentials: the AWS chain supplies them)
client.py    the boto3 client of a remote and the one place its errors become ours
manifest.py  the store's layout (blobs by sha256, one manifest per model) and the manifest format
push.py      upload (HEAD decides, multipart via s3transfer, manifest last, push recorded)
fetch.py     one blob to a file: parallel ranged GETs, SHA-256 while streaming, resume
pull.py      models into the location layout, recorded with their source and remote
check.py     `remote ls` and `verify --remote-store`
"""
