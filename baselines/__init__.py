"""Methods the paper compares IP-IQA with."""
