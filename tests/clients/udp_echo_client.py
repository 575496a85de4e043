from socket import *

ip_port = ("127.0.0.1", 8081)
buffer_size = 1024
encoding = 'utf-8'

udp_client = socket(AF_INET, SOCK_DGRAM)

while True:
    try:
        input_data = input("请输入数据:")
        input_data_byte = input_data.encode(encoding)

        udp_client.sendto(input_data_byte, ip_port)

        data_byte, address = udp_client.recvfrom(buffer_size)
        data_str = data_byte.decode(encoding)
        print('接收的数据', data_str)
    except Exception as ex:
        print(ex)
