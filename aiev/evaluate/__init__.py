"""Stage: the loop's scoring. ``passk``: pass@1 of the teacher and of the student on a batch's test split (the
benchmark suites are :mod:`aiev.scoring`)."""
