"""`python -m muser.train SPEC`: one torchrun worker of a multi-process `muser pretrain`."""

import sys

from muser.train.launch import main

sys.exit(main())
