"""The single binary's entry point: the same ``mdm`` command as the pip-installed one."""

from mdm.__main__ import main

main()
