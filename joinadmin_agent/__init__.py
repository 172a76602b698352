"""The joinadmin agent: joins an EC2 instance using its AWS-signed identity document.

It runs on every joining machine, so it depends on the standard library and cryptography only.
"""
