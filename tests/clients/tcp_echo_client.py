from socket import *

ip_port = ("127.0.0.1", 8080)
buffer_size = 1024
encoding = 'utf-8'

tcp_client = socket(AF_INET, SOCK_STREAM)
tcp_client.connect(ip_port)

while True:
    try:
        input_data = input("请输入数据")

        if input_data == 'quit':
            break

        if not input_data:
            continue

        data_byte = input_data.encode(encoding)
        tcp_client.send(data_byte)

        recv_data_byte = tcp_client.recv(buffer_size)
        recv_data = recv_data_byte.decode(encoding)
        print('客户端接收数据', recv_data)
    except Exception as ex:
        print(ex)
        break

tcp_client.close()
