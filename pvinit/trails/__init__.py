"""On-device revision storage: objects, trails, refs, persistent disks and logs.

See :mod:`pvinit.trails.layout` for the directory layout,
:mod:`pvinit.trails.refs` for the compare-and-swap pointers and
:mod:`pvinit.trails.install` for putting a revision (or a bundle) in place.

Nothing is re-exported here: the dev launcher (playing the bootloader) needs
only :mod:`~pvinit.trails.layout`, and an eager import of ``install`` would
load signing, the state model and the object store into it (~14 ms).
"""
