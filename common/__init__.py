"""Code shared by the master and the slave: config, rsync, signing, wire types.

Nothing in here imports ``master`` or ``slave``.
"""
