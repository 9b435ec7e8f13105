"""Key rotation and the jobs that move data between keys (what the ``piiguard`` CLI runs).

One responsibility a module:

- :mod:`~piiguard.rotation.status` — every key and how many rows still use it;
- :mod:`~piiguard.rotation.rewrap` — rewrap all keys under a new master key;
- :mod:`~piiguard.rotation.reencrypt` — move rows to the active DEK / index key;
- :mod:`~piiguard.rotation.migrate` — encrypt a plaintext column in place;
- :mod:`~piiguard.rotation.verify` — decrypt everything, report failures;
- :mod:`~piiguard.rotation.shred` — retire, destroy, shred a scope;
- :mod:`~piiguard.rotation.batches` — the compare-and-swap batch engine behind the jobs;
- :mod:`~piiguard.rotation.sql`, :mod:`~piiguard.rotation.targets`,
  :mod:`~piiguard.rotation.progress` — the SQL, the columns, progress reporting.

>>> import piiguard.rotation as r
>>> all(callable(getattr(r, name)) for name in r.__all__)
True
"""

from piiguard.rotation.migrate import MigrateReport, encrypt_existing
from piiguard.rotation.progress import CountingProgress, NullProgress, Progress
from piiguard.rotation.reencrypt import ReencryptReport, reencrypt
from piiguard.rotation.rewrap import RewrapReport, rotate_master
from piiguard.rotation.shred import ShredReport, destroy_key, retire_key, shred_scope
from piiguard.rotation.status import StatusReport, key_status
from piiguard.rotation.verify import VerifyReport, verify

__all__ = [
           "CountingProgress",
           "MigrateReport",
           "NullProgress",
           "Progress",
           "ReencryptReport",
           "RewrapReport",
           "ShredReport",
           "StatusReport",
           "VerifyReport",
           "destroy_key",
           "encrypt_existing",
           "key_status",
           "reencrypt",
           "retire_key",
           "rotate_master",
           "shred_scope",
           "verify",
]
