"""Suite-wide settings.

Under CI (``CI`` set, as ``.ci/run`` is run), Hypothesis draws the same examples on every run
(``derandomize``): a property test then explores as widely as ever, but a submission's result
does not depend on the luck of one draw. Locally it keeps drawing fresh examples, which is
where new counter-examples are found.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
