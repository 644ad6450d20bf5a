-- Issue 13: a container may run with its root filesystem read-only.
ALTER TABLE containers ADD COLUMN read_only_rootfs boolean NOT NULL DEFAULT false;
