"""The job's processes: the launcher watchdog and the native-log filter."""
