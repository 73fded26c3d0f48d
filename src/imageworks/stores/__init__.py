"""Every copy of every model: the copies an entry has (our roots and other tools' shelves), importing
those shelves, linking models onto them, counting and deduplicating the bytes, and removal that knows
what is shared.

  copies.py     the copies of an entry as one list (primary + extras), file identities (dev, inode)
  remove.py     the removal plan: what goes, bytes actually freed, what stays and why
  local.py      a download satisfied from a copy already on this machine (hardlink or verified copy)
  shelves.py    where each tool keeps its models (env vars and default folders, resolved at call time)
  importing.py  recording what a shelf holds (new entries, or copies of known ones)
  linking.py    `link`: placing a model on a shelf and recording the copy; placing.py: one file
  hf_cache.py  ollama.py  lmstudio.py  llamacpp.py   each tool's layout: find (import) and link
  usage.py      du: logical, physical, shared and duplicated bytes
  dedupe.py     identical files replaced by hardlinks to one verified file
"""
