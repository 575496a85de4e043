from socket import *
from test5 import constants
import struct

tcp_client = socket(AF_INET, SOCK_STREAM)
tcp_client.connect(constants.ip_port)

while True:
    try:
        input_data_str = input("请输入数据")
        input_data_byte = constants.str_to_byte(input_data_str)

        # 获取数据的长度
        input_data_byte_len = len(input_data_byte)
        print('数据长度', input_data_byte_len)
        send_data_len_byte = struct.pack('i', input_data_byte_len)

        # 先发送数据的长度
        tcp_client.send(send_data_len_byte)

        # 发送真实的数据
        tcp_client.send(input_data_byte)

        # 等待服务端发送结果的回调
        success_data_byte = tcp_client.recv(constants.buffer_size)
        success_data_str = constants.byte_to_str(success_data_byte)

        if success_data_str == 'success':
            print('数据发送成功')
        else:
            print('数据发送失败', success_data_str)

    except Exception as ex:
        print(ex)
        break

tcp_client.close()
