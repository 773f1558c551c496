"""Tests of aiev.chat: the interpreter loop against a scripted server and the tiny student."""
