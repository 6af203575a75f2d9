"""(being written)"""
def info_parser(fmt, long_size=8):
    raise NotImplementedError
