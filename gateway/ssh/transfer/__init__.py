"""SFTP, scp and rsync streams parsed and audited per file on the relay."""
