ip_port = ('127.0.0.1', 8080)
buffer_size = 1024
encoding = 'utf-8'
back_log = 5


def str_to_byte(data):
    """
    字符串转换为字节
    :param data:
    :return:
    """
    return data.encode(encoding)


def byte_to_str(data):
    """
    字节转换为字符串
    :param data:
    :return:
    """
    return data.decode(encoding)
