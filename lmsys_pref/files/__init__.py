"""The lowest layer: files that appear whole or not at all and one run per folder (`atomic`),
a folder's entries moved into a subfolder all or none (`move_aside`), JSON written and read
with named errors (`jsonio`), and the competition's tables read exactly as they are, ids as
text (`tables`). Standard library, numpy, pandas and pyarrow only."""
