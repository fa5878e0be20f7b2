"""Fuzzing tcomp against eager (issue 18, item 6): generators, checker and the fast seeded subset; the long
mode is bench/fuzz.py."""
